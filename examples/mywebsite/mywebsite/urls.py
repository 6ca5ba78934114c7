from django.urls import path

from polls import views

urlpatterns = [
    path("", views.instance, name="instance"),
    path("health", views.health, name="health"),
]
