"""The lab: a gateway with fault modes and stand-in DLLs, to rehearse the probe on one host."""
