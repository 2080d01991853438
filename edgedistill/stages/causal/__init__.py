"""The stages of an instruction-following causal LM's pipeline (data.kind instructions): teacher, student,
distill, export, bench. The report stage is shared with the other kinds."""
