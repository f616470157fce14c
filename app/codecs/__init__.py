"""Wire formats <-> the server's own request and response types."""
