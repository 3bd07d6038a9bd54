"""Helpers shared by the tests (no tests live here): paths, golden trees, running stacks, routers,
the reference engine's model repositories, deployment specs and CRD validation."""
