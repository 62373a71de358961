"""Service-level accounting: the pure window arithmetic (``windows``) and the live snapshot read
from Redis (``snapshot``) that ``/metrics`` and ``peakroute status`` both show."""
