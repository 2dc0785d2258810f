"""What a person looks at: figures, report.html, TensorBoard logs, and runs compared side by side."""
