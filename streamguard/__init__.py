"""streamguard: flag synthetic (deepfake) voices on live calls, within seconds."""

__version__ = "0.1.0"
