"""Mesh, logical-axis sharding rules, memory planner and sharded checkpoints."""
