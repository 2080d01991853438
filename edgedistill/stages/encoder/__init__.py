"""The stages of a sentence-encoder pipeline (data.kind text): teacher, student, distill, export.

The bench and report stages are shared with image pipelines.
"""
