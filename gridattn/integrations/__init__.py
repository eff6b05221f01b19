"""Bridges between gridattn and other libraries, each in its own module and each needing that library installed.

* :mod:`gridattn.integrations.spandrel`: registers gridattn's HMANet with spandrel (the model loader of chaiNNer
  and ComfyUI), so that ``spandrel.ModelLoader`` detects HMANet checkpoints (``pip install "gridattn[spandrel]"``).

Nothing here is imported by ``import gridattn``.
"""
