"""The officials' pages of the portfolio app."""

from django.urls import path

from portfolio import views

urlpatterns = [
    path("funds/<int:pk>/", views.portfolio, name="portfolio"),
]
