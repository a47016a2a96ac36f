"""tflite: export a DSNN to one .tflite file with a runtime sparsity_level input; runtime and benchmark."""
