"""Fine-tuning SAM2.1 on labelled volumes with sam2's own training model and loss (`main.py finetune`)."""
