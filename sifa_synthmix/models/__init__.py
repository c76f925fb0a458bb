"""The SIFA networks and their parts: the official TF1 building blocks as Keras layers, the nine
sub-networks (and the target segmenter e_B + s_B alone), traced forward passes, the losses, the
fake-image pools, the cross-replica helpers a train step calls, and SynthMix's parts (synthmix/)."""
