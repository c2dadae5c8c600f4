from django.contrib import admin
from django.urls import include, path
from django_otp.admin import OTPAdminSite

from alem import health, views

# The back office asks for a verified second factor as well as staff status.
admin.site.__class__ = OTPAdminSite
# Its sign-in is the site's own (password and code, one lockout), not a second form.
admin.site.login = views.admin_login

urlpatterns = [
    # For load balancers: no session, no sign-in, no trailing slash (alem.health).
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("accounts/login/", views.login, name="login"),
    path("accounts/logout/", views.logout, name="logout"),
    path("accounts/two-factor/", views.otp_enrol, name="otp-enrol"),
    path("accounts/api-tokens/", views.api_tokens, name="api-tokens"),
    path(
        "accounts/api-tokens/<int:pk>/revoke/",
        views.api_token_revoke_view,
        name="api-tokens-revoke",
    ),
    path(
        "accounts/api-tokens/revoke-all/",
        views.api_tokens_revoke_all_view,
        name="api-tokens-revoke-all",
    ),
    path("i18n/setlang/", views.language_switch, name="set_language"),
    path("admin/", admin.site.urls),
    path("api/", include("alem.api_urls")),
    path("", include("portfolio.urls")),
    path("", include("governance.urls")),
]
