"""Django's own strings that Alem's pages show, listed so that Alem's catalogues carry them.

Django's Kazakh catalogue lacks the durations of ``timesince``/``timeuntil`` ("3 days", shown in
the queue and on proposal pages) and writes month names capitalised in the middle of a date.
``makemessages`` collects the strings below into ``alem/locale``, whose translations take
precedence over Django's own. The msgids must stay exactly Django's; this module is never
imported.
"""

from django.utils.translation import ngettext_lazy, pgettext_lazy

DURATIONS = (
    ngettext_lazy("%(num)d year", "%(num)d years", "num"),
    ngettext_lazy("%(num)d month", "%(num)d months", "num"),
    ngettext_lazy("%(num)d week", "%(num)d weeks", "num"),
    ngettext_lazy("%(num)d day", "%(num)d days", "num"),
    ngettext_lazy("%(num)d hour", "%(num)d hours", "num"),
    ngettext_lazy("%(num)d minute", "%(num)d minutes", "num"),
)

# The month in a date ("21 қараша"), the ``E`` of the date formats.
MONTHS_IN_DATES = (
    pgettext_lazy("alt. month", "January"),
    pgettext_lazy("alt. month", "February"),
    pgettext_lazy("alt. month", "March"),
    pgettext_lazy("alt. month", "April"),
    pgettext_lazy("alt. month", "May"),
    pgettext_lazy("alt. month", "June"),
    pgettext_lazy("alt. month", "July"),
    pgettext_lazy("alt. month", "August"),
    pgettext_lazy("alt. month", "September"),
    pgettext_lazy("alt. month", "October"),
    pgettext_lazy("alt. month", "November"),
    pgettext_lazy("alt. month", "December"),
)
