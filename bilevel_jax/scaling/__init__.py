"""Scaling selection out: sharding over devices, streaming pools larger than memory."""
