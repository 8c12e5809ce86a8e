"""The gRPC adapter: proto ↔ domain, status codes, and the server's lifecycle."""
