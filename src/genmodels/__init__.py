"""genmodels: the tested building blocks of 'A Tale of VAEs, WGANs and DDPMs'.

Each module holds one concept of the book; see the README for the map.
"""

__version__ = "0.1.0"
