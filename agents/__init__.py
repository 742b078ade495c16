"""Example agent programs, each its own OS process: qa.py (question answering), react.py (ReAct with a calculator);
demo.py runs several at once against a fresh kernel."""
