"""The real CPU as an oracle: run x86 code blocks natively in a helper process."""
