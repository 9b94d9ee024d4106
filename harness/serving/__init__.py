"""Serving: an Open Inference Protocol endpoint whose engine lives in one worker process,
with dynamic batching, and a closed-loop load test."""
