"""Interactive web viewer (viser): explore a trained model (view.py) or watch training (train.py --viewer).

Modules: camera (browser <-> dataset cameras), modes (RGB / depth / feature PCA / cluster
colouring), content (what is shown), client_view (one tab's controls and render loop),
server (the viser server), training (the hooks train.py calls).
"""
