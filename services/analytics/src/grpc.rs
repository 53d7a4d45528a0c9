//! The `AnalyticsService` gRPC API.

use jetmart_proto::analytics::v1 as pb;
use jetmart_proto::analytics::v1::analytics_service_server::AnalyticsService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::dashboard::{self, Dashboards};

#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    dashboards: Dashboards,
}

impl AnalyticsApi {
    pub fn new(dashboards: Dashboards) -> Self {
        Self { dashboards }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_dashboard(
        &self,
        request: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::GetDashboardResponse>, Status> {
        let req = request.into_inner();
        let query = dashboard::query(req.series_minutes, req.top_skus_limit)?;
        let view = self.dashboards.read(query).await?;
        Ok(Response::new(pb::GetDashboardResponse {
            dashboard: Some(convert::dashboard(&view)),
        }))
    }
}
