"""The use-cases: plan, pack and unpack, composed from the layers below."""
