"""The floor of the house: small helpers every layer may use; imports nothing from hyptree."""
