"""What users run on top of training and deployment: tagging (sources, drawing), parity,
benchmarks, the paper's experiments and the demo (reports, gallery, activation maps), doctor."""
