//! PresetService.

use super::convert::preset_pb;
use super::{Api, caller};
use crate::error::Error;
use crate::pb::preset_service_server::PresetService;
use crate::pb::*;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl PresetService for Api {
    async fn list_presets(
        &self,
        req: Request<ListPresetsRequest>,
    ) -> Result<Response<ListPresetsResponse>, Status> {
        caller(&req)?;
        Ok(Response::new(ListPresetsResponse {
            presets: self.app.catalog().presets.iter().map(preset_pb).collect(),
        }))
    }

    async fn get_preset(
        &self,
        req: Request<GetPresetRequest>,
    ) -> Result<Response<GetPresetResponse>, Status> {
        caller(&req)?;
        let catalog = self.app.catalog();
        let id = &req.get_ref().preset_id;
        if id.is_empty() {
            return Err(Error::invalid(
                "preset_id",
                format!("is required; one of: {}", catalog.preset_ids().join(", ")),
            )
            .into());
        }
        match catalog.preset(id) {
            Some(p) => Ok(Response::new(GetPresetResponse {
                preset: Some(preset_pb(p)),
            })),
            // Through the one Error → Status mapping (no echo of the id).
            None => Err(Error::NotFound {
                kind: "preset",
                hint: format!("; known presets: {}", catalog.preset_ids().join(", ")),
            }
            .into()),
        }
    }
}
