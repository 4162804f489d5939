"""Request parameters more than one route reads: image ids in paths, the image filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from services.gateway.filters import ImageFilters, instant_range
from shared.errors import ValidationFailed

# ids are 64-bit in Postgres; a bigger one would be a driver error (500) instead of a 422
MAX_ID = 2**63 - 1
MAX_BYTES = 2**62

ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="the image's id")]


# async although it awaits nothing: a plain `def` dependency costs a thread-pool hop per request
async def get_image_filters(
    date_from: Annotated[str | None, Query(max_length=40, description=(
        "uploaded at or after this ISO date or date-time"))] = None,
    date_to: Annotated[str | None, Query(max_length=40, description=(
        "uploaded before this date-time, or on or before this date"))] = None,
    taken_from: Annotated[str | None, Query(max_length=40, description=(
        "taken (EXIF capture date) at or after this ISO date or date-time; photos without "
        "a capture date are left out"))] = None,
    taken_to: Annotated[str | None, Query(max_length=40, description=(
        "taken before this date-time, or on or before this date"))] = None,
    source: Annotated[str | None, Query(min_length=1, max_length=1024, description=(
        "the folder/source given at upload, or a parent folder of it"))] = None,
    min_bytes: Annotated[int | None, Query(ge=0, le=MAX_BYTES)] = None,
    max_bytes: Annotated[int | None, Query(ge=0, le=MAX_BYTES)] = None,
    min_megapixels: Annotated[float | None, Query(ge=0, le=1e6, allow_inf_nan=False)] = None,
    max_megapixels: Annotated[float | None, Query(ge=0, le=1e6, allow_inf_nan=False)] = None,
) -> ImageFilters:
    """The filter query parameters of search and listing, checked (a range must not be upside
    down)."""
    start, end = instant_range(date_from, date_to, names=("date_from", "date_to"))
    taken_start, taken_end = instant_range(taken_from, taken_to,
                                           names=("taken_from", "taken_to"))
    if min_bytes is not None and max_bytes is not None and min_bytes > max_bytes:
        raise ValidationFailed("min_bytes: must not exceed max_bytes")
    if (min_megapixels is not None and max_megapixels is not None
            and min_megapixels > max_megapixels):
        raise ValidationFailed("min_megapixels: must not exceed max_megapixels")
    return ImageFilters(date_from=start, date_to=end, taken_from=taken_start,
                        taken_to=taken_end, source=(source or "").strip() or None,
                        min_bytes=min_bytes, max_bytes=max_bytes,
                        min_megapixels=min_megapixels, max_megapixels=max_megapixels)


ImageFiltersDep = Annotated[ImageFilters, Depends(get_image_filters)]
