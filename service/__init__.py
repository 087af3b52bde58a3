"""Import service core: plain functions and classes, no Dramatiq/Falcon/gRPC imports."""
