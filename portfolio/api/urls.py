from rest_framework.routers import SimpleRouter

from portfolio.api.views import AssetViewSet, FundViewSet

router = SimpleRouter()
router.register("funds", FundViewSet, basename="fund")
router.register("assets", AssetViewSet, basename="asset")

urlpatterns = router.urls
