# Kazakh formats, which Django does not ship: without them Kazakh pages would show English dates
# ("Nov. 21, 2026, 9:52 a.m.") and ungrouped numbers with a decimal point. Dates follow the
# Kazakh style ("2026 ж. 21 қараша"); numbers group like Russian ones ("25 000 000,00").
# The *_FORMAT strings use the Django date format syntax,
# see https://docs.djangoproject.com/en/stable/ref/templates/builtins/#date
DATE_FORMAT = "Y ж. j E"
TIME_FORMAT = "H:i"
DATETIME_FORMAT = "Y ж. j E, H:i"
YEAR_MONTH_FORMAT = "Y ж. E"
MONTH_DAY_FORMAT = "j E"
SHORT_DATE_FORMAT = "d.m.Y"
SHORT_DATETIME_FORMAT = "d.m.Y H:i"
FIRST_DAY_OF_WEEK = 1  # Monday

# The *_INPUT_FORMATS strings use the Python strftime format syntax; Django adds the ISO formats.
DATE_INPUT_FORMATS = [
    "%d.%m.%Y",  # '25.10.2006'
    "%d.%m.%y",  # '25.10.06'
]
DATETIME_INPUT_FORMATS = [
    "%d.%m.%Y %H:%M:%S",  # '25.10.2006 14:30:59'
    "%d.%m.%Y %H:%M:%S.%f",  # '25.10.2006 14:30:59.000200'
    "%d.%m.%Y %H:%M",  # '25.10.2006 14:30'
    "%d.%m.%y %H:%M:%S",  # '25.10.06 14:30:59'
    "%d.%m.%y %H:%M:%S.%f",  # '25.10.06 14:30:59.000200'
    "%d.%m.%y %H:%M",  # '25.10.06 14:30'
]
DECIMAL_SEPARATOR = ","
THOUSAND_SEPARATOR = "\xa0"  # non-breaking space
NUMBER_GROUPING = 3
