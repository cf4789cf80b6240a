"""Generated protobuf messages for the `perception.v1` contract (proto/perception/v1).

Do not edit the *_pb2.py files here: regenerate with `python -m perception.tools.gen_proto`.
"""
