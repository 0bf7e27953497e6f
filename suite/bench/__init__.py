"""Throughput workloads (`mtbench bench`) and their JSON record."""
