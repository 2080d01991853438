"""Language-model distillation: transformer teachers, layer-dropped students, text data, evaluation."""
