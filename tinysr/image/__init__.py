"""Running the network on images: reading image files into integer pixels, the tiled upscaling
pipeline and running the network on a Y plane.
"""
