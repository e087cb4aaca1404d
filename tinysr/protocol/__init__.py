"""The paper's evaluation protocol and its data: Matlab-exact bicubic ``imresize``, BT.601 colour
conversion, PSNR/SSIM and the shaving/rounding rules, evaluating a folder, the authors' training
patches and Matlab weights, and where the shared data lives.
"""
