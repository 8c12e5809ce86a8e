"""Pure decision logic: plain values in, a Choice out. No gRPC, SQL, FAISS or torch here."""

from routebook.decide.choose import DecisionParams, DecisionRequest, decide

__all__ = ["DecisionParams", "DecisionRequest", "decide"]
