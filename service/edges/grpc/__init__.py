"""The gRPC edge on grpc.aio (`python -m service.grpc_server`): the Importer service, health
and reflection (`server`), and the streams that hold no thread while open (`streams`). It
imports the shared edge modules (api, wiring), the generated code and the layers below,
never the REST or CLI edge.
"""
