"""EndoNeRF 'cutting_tissues_twice' (156 frames, 640x512, fixed endoscope).

    python train.py -s data/cutting -m output/cutting --config arguments/endonerf/cutting.py

The published protocol is the same for both EndoNeRF scenes, so this file only inherits
default.py; add a ``ModelParams = {...}`` / ``OptimizationParams = {...}`` dict here to
override a value for this scene alone.
"""
_base_ = "default.py"
