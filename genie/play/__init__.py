"""The pygame front end (`genie play`, `genie calibrate`).

The window (app.py, view.py) talks only to an object with reset/step/snapshot/restore and,
optionally, preview: a learned World or a recorded episode (replay.py). A worker thread
(worker.py) alone touches that object, so drawing and keys never wait on a frame.
"""
