"""Generated from proto/routebook/v1 by scripts/gen-proto; never edit by hand."""
