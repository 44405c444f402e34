"""The pages of tokens, added to the app's ``drs`` namespace when this app is installed."""

from django.urls import path

from . import views

urlpatterns = [
    path("tokens/", views.token_list, name="token-list"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
]
