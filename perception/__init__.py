"""perception: multi-camera 3D perception over ZeroMQ with a multi-view Vision Transformer."""

__version__ = "0.1.0"
