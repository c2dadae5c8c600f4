"""Back-office pages whose every save and delete is on the record (issue 14, part 6).

``OnTheRecordAdminMixin`` routes a ``ModelAdmin``'s saves and deletes through
``governance.services.back_office``: the admin's change form already runs in one transaction,
so the row, its many-to-many fields and the audit event commit together. Bulk deletes go row by
row through the same service. Inline rows are not recorded here: the pages that use this mixin
have none that can be edited (the tasks listed on a schedule's page are read-only upstream).
Admin actions that change rows must use ``back_office.on_the_record`` too (see
``PeriodicTaskAdmin``).
"""

from django.db import transaction

from governance.services import back_office


class OnTheRecordAdminMixin:
    def save_model(self, request, obj, form, change):
        obj._on_the_record_before = back_office.record_stored(type(obj), obj.pk) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        obj = form.instance
        back_office.record_saved(
            actor=request.user,
            instance=obj,
            before=getattr(obj, "_on_the_record_before", None),
            via=back_office.ADMIN,
        )

    def delete_model(self, request, obj):
        back_office.record_delete(actor=request.user, instance=obj, via=back_office.ADMIN)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)
