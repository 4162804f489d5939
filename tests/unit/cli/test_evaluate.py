from capsearch.commands.evaluate import retrieval_metrics


def test_retrieval_metrics_counts_ranks_within_k_as_percentages() -> None:
    m = retrieval_metrics([1, 2, 6, 11, 40], pool=50)
    assert m == {"pool": 50, "queries": 5, "r1": 20.0, "r5": 40.0, "r10": 60.0,
                 "median_rank": 6.0}


def test_retrieval_metrics_median_of_an_even_count_is_the_midpoint() -> None:
    assert retrieval_metrics([1, 3, 5, 7], pool=10)["median_rank"] == 4.0
