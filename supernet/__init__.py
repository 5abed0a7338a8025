"""The weight-sharing supernet: elastic layers, sandwich training, subnet extraction and evaluation, recipes."""
