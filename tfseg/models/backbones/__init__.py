"""Feature extractors shared by the segmentation heads.

Contract: a backbone is a functional `keras.Model` whose output is a dict of feature maps keyed
`"Pn"`, where `Pn` is 2**n times smaller than the input. A head reads only the keys it needs.
"""
