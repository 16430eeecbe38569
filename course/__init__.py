"""The GrowLength course: six labs (lab1-*.md ... lab6-*.md), their checked exercises and tests.

A package so that `pytest course/` imports the tests as course.test_labN with the repo root on
sys.path, and so the project's modules (schedule, model, kernels) import as they do in tests/.
"""
