"""Pydantic models of the Stepwise custom resources; the CRD YAML is generated from them."""
