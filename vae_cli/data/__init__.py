"""MNIST and Fashion-MNIST from torchvision's folder layout: finding the files (folders.py, no
torch), checking and reading the IDX format (idx.py), and the images as uint8 tensors in the
binarization asked for (dataset.py)."""
