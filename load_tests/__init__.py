"""Load generators and benchmarks for peakroute (not run by `make test`)."""
