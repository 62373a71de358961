"""peakroute: a streaming contact router for customer service at sales peaks."""

__version__ = "0.1.0"
