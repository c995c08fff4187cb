"""Online evaluation in the demo world: the open-loop replay of a test day judged by the
world's true clicks (``replay``) and the closed-loop A/B's model rankers (``ab``).

May import everything below it (data, model, training, semantic IDs, serving's loaders).
"""
