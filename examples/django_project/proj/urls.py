from django.urls import path
from shop import views

urlpatterns = [
    path("greet/", views.start_greeting),
    path("tasks/<str:task_id>/", views.task_status),
]
