"""`ballast.admin.v1`: admin.proto and the code generated from it (do not edit the *_pb2* files)."""
