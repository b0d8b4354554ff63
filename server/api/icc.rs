//! IccService.

use super::convert::{
    aspect_from, job_pb, manifest_pb, markers_from, markers_pb, quote_pb, require_id, shots_from,
    ts,
};
use super::{Api, caller};
use crate::app::icc::ManifestPatch;
use crate::domain::manifest::{EDITABLE_FIELDS, READ_ONLY_FIELDS};
use crate::domain::validate::{Violations, echo};
use crate::error::Error;
use crate::pb::icc_service_server::IccService;
use crate::pb::*;
use tonic::{Request, Response, Status};

fn brand_id(v: &mut Violations, id: &str) {
    v.identifier("brand_id", id, 128, "._-", true);
}

#[tonic::async_trait]
impl IccService for Api {
    async fn get_manifest(
        &self,
        req: Request<GetManifestRequest>,
    ) -> Result<Response<GetManifestResponse>, Status> {
        let who = caller(&req)?;
        require_id("job_id", &req.get_ref().job_id)?;
        let job = self.app.manifest(&who, &req.get_ref().job_id).await?;
        Ok(Response::new(GetManifestResponse {
            manifest: manifest_pb(&job),
            quote: job.quote.as_ref().map(quote_pb),
        }))
    }

    async fn update_manifest(
        &self,
        req: Request<UpdateManifestRequest>,
    ) -> Result<Response<UpdateManifestResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.identifier("job_id", &r.job_id, 128, "_-", true);
        v.check(
            !r.etag.is_empty(),
            "etag",
            "is required: pass the etag of the manifest you edited",
        );
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        v.check(
            !paths.is_empty(),
            "update_mask",
            format!(
                "must name the fields to change: any of {}",
                EDITABLE_FIELDS.join(", ")
            ),
        );
        let manifest = r.manifest.unwrap_or_default();
        let mut patch = ManifestPatch::default();
        for (i, path) in paths.iter().enumerate() {
            let field = format!("update_mask.paths[{i}]");
            match path.as_str() {
                "shots" => patch.shots = Some(shots_from(&manifest.shots, "manifest.", &mut v)),
                "aspect_ratio" => match aspect_from(manifest.aspect_ratio) {
                    Ok(Some(a)) => patch.aspect_ratio = Some(a),
                    _ => v.add("manifest.aspect_ratio", "must be a known aspect ratio"),
                },
                "audio_style" => {
                    v.text("manifest.audio_style", &manifest.audio_style, 0, 200);
                    patch.audio_style = Some(manifest.audio_style.clone());
                }
                p if READ_ONLY_FIELDS.contains(&p) || p.starts_with("consistency_markers.") => {
                    v.add(field, format!("{} is read-only", echo(p)));
                    continue;
                }
                p => {
                    v.add(
                        field,
                        format!(
                            "unknown field {}; editable: {}",
                            echo(p),
                            EDITABLE_FIELDS.join(", ")
                        ),
                    );
                    continue;
                }
            }
            if patch.changed_fields.contains(path) {
                v.add(format!("update_mask.paths[{i}]"), "is repeated");
            } else {
                patch.changed_fields.push(path.clone());
            }
        }
        // Without a job, an etag or a mask there is nothing to check against the job: answer now.
        if r.job_id.is_empty() || r.etag.is_empty() || paths.is_empty() {
            return Err(Error::InvalidArgument(v.into_vec()).into());
        }
        patch.violations = v;
        let job = self
            .app
            .update_manifest(&who, &r.job_id, &r.etag, patch)
            .await?;
        Ok(Response::new(UpdateManifestResponse {
            manifest: manifest_pb(&job),
            quote: job.quote.as_ref().map(quote_pb),
        }))
    }

    async fn approve_manifest(
        &self,
        req: Request<ApproveManifestRequest>,
    ) -> Result<Response<ApproveManifestResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.identifier("job_id", &r.job_id, 128, "_-", true);
        v.check(
            !r.etag.is_empty(),
            "etag",
            "is required: pass the etag of the revision you approve",
        );
        v.finish().map_err(Error::InvalidArgument)?;
        let job = self.app.approve_manifest(&who, &r.job_id, &r.etag).await?;
        Ok(Response::new(ApproveManifestResponse {
            job: Some(job_pb(&job)),
        }))
    }

    async fn approve_delivery(
        &self,
        req: Request<ApproveDeliveryRequest>,
    ) -> Result<Response<ApproveDeliveryResponse>, Status> {
        let who = caller(&req)?;
        require_id("job_id", &req.get_ref().job_id)?;
        let job = self
            .app
            .approve_delivery(&who, &req.get_ref().job_id)
            .await?;
        Ok(Response::new(ApproveDeliveryResponse {
            job: Some(job_pb(&job)),
        }))
    }

    async fn request_revision(
        &self,
        req: Request<RequestRevisionRequest>,
    ) -> Result<Response<RequestRevisionResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.identifier("job_id", &r.job_id, 128, "_-", true);
        v.check(
            !r.shot_ids.is_empty(),
            "shot_ids",
            "must name at least one shot",
        );
        v.text("notes", &r.notes, 0, 2_000);
        v.finish().map_err(Error::InvalidArgument)?;
        let job = self
            .app
            .request_revision(&who, &r.job_id, &r.shot_ids, &r.notes)
            .await?;
        Ok(Response::new(RequestRevisionResponse {
            job: Some(job_pb(&job)),
        }))
    }

    async fn get_brand_markers(
        &self,
        req: Request<GetBrandMarkersRequest>,
    ) -> Result<Response<GetBrandMarkersResponse>, Status> {
        let who = caller(&req)?;
        let mut v = Violations::new();
        brand_id(&mut v, &req.get_ref().brand_id);
        v.finish().map_err(Error::InvalidArgument)?;
        let (markers, expires) = self
            .app
            .brand_markers(&who, &req.get_ref().brand_id)
            .await?;
        Ok(Response::new(GetBrandMarkersResponse {
            markers: Some(markers_pb(&markers)),
            expire_time: Some(ts(expires)),
        }))
    }

    async fn update_brand_markers(
        &self,
        req: Request<UpdateBrandMarkersRequest>,
    ) -> Result<Response<UpdateBrandMarkersResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        brand_id(&mut v, &r.brand_id);
        let markers = markers_from(r.markers.as_ref(), "markers", &mut v);
        v.finish().map_err(Error::InvalidArgument)?;
        let markers = markers.ok_or_else(|| Error::invalid("markers", "is invalid"))?;
        let (markers, expires) = self
            .app
            .put_brand_markers(&who, &r.brand_id, markers)
            .await?;
        Ok(Response::new(UpdateBrandMarkersResponse {
            markers: Some(markers_pb(&markers)),
            expire_time: Some(ts(expires)),
        }))
    }

    async fn invalidate_brand_markers(
        &self,
        req: Request<InvalidateBrandMarkersRequest>,
    ) -> Result<Response<InvalidateBrandMarkersResponse>, Status> {
        let who = caller(&req)?;
        let mut v = Violations::new();
        brand_id(&mut v, &req.get_ref().brand_id);
        v.finish().map_err(Error::InvalidArgument)?;
        let existed = self
            .app
            .invalidate_brand_markers(&who, &req.get_ref().brand_id)
            .await?;
        Ok(Response::new(InvalidateBrandMarkersResponse { existed }))
    }
}
